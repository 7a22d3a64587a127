"""tunebook: versioned fine-tuning recipes, validated and adapted, run by real engines."""

__version__ = "0.1.0"
