"""kinetics_prep: Kinetics annotations -> clips -> 4 sampled frames -> conversation manifest.

The data side of kprep. It never imports ``trainer``; the manifest / Arrow schema
(docs/schema.md) is the contract between the two packages.
"""

__version__ = "0.1.0"
