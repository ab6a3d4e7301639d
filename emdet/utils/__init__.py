"""Small shared plumbing: atomic file output (:mod:`emdet.utils.atomic`)."""
from emdet.utils.atomic import atomic_open, atomic_write, atomic_write_many, clean_stale_temps

__all__ = ["atomic_open", "atomic_write", "atomic_write_many", "clean_stale_temps"]
