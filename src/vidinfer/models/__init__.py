"""Model adapters behind one Protocol (``vidinfer.models.base.Model``) and their registry."""
