"""`make bench`: Threadsite's performance targets, measured as ratios on this machine.

See docs/performance.md for what each row measures and what makes it fast.
"""
