"""trd: pretrain, transfer, dispose of what released weights give away, and attack the result."""

__version__ = "0.1.0"
