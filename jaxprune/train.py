"""python -m jaxprune.train — train the shipped easy-VQA LLaVA (the recipe: `jaxprune/recipes/easyvqa.py`)."""

from jaxprune.recipes.easyvqa import main, run_cli

if __name__ == "__main__":
  run_cli(main)
