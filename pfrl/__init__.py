"""pfrl: online preference optimization with pseudo feedback for reasoning LLMs."""

__version__ = "0.1.0"
