import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
