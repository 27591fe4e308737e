"""A tiny nbgrader course and adversarial submissions, generated in code (see course.py)."""
