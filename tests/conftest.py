"""Shared pytest configuration (keep minimal; add, never remove)."""

import os
import sys

# Let test modules import the helpers next to them (reference_impls.py) whatever
# pytest's import mode and whether or not tests/ becomes a package.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
