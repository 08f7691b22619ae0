"""Model adapters implementing the pipeline's contract (``vidinfer.core.model.Model``) and their registry."""
