"""failberry: a self-repairing cellular backup link on a Raspberry Pi, and a host guard."""

__version__ = "0.1.0"
