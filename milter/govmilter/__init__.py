"""govmilter: a Postfix milter enforcing the provincial rules on official e-mail."""

__version__ = "0.1.0"
