"""Compiled kernels: plain arrays and scalars in, arrays out. No pyarrow and no Python objects in here.

Modules are imported by the public functions when they run, so ``import fastrisk`` compiles nothing.
"""
