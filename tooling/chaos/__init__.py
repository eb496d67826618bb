"""The fault harness: the real pipeline as real processes, with faults injected (`manage.py chaos`)."""
