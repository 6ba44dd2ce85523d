"""hubtop's data layer: sources, store, query language and actions. Pure Python: never imports Textual."""
