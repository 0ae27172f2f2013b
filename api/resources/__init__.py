"""One blueprint per resource; each module exposes ``bp``."""
