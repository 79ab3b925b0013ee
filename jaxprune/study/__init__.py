"""The where-to-prune study: one command from a model and a task to a report with sound controls.

    cli        `python -m jaxprune.study` flags (the eval's, plus --seeds, --bootstrap, --render-only)
    run        the plan from the model's config alone, and the full / blind / sweep eval stages (each resumes)
    analysis   the stages' sample records -> analysis.json (every number the report shows)
    stats      paired bootstrap over items and random draws, Holm across a table
    report     analysis.json -> README.md and plots (the same file gives the same bytes)
"""
