"""The git hooks that git-keepsake installs: this folder is built into the package as
git_keepsake.hooks (pyproject.toml maps it), so hook.py reads pre-push with importlib.resources
from a wheel and from an editable install alike. This file makes it a regular package, which
setuptools' editable finder needs to map a subpackage that lives outside git_keepsake/."""
