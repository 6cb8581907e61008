"""Everything git-keepsake keeps in git; the only package that imports pygit2."""
