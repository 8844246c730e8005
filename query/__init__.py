"""The iDigBio query format: catalogue, validation, normalisation, hashing and compilers.

This package is pure: it performs no I/O beyond reading its own packaged catalogue.
"""
