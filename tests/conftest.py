import os
import sys

from hypothesis import settings

# tests import their helpers module by plain name
sys.path.insert(0, os.path.dirname(__file__))

# `pytest --hypothesis-profile=long` hunts longer in the property tests that leave
# max_examples to the profile (the default profile runs 100).
settings.register_profile("long", max_examples=5000)
