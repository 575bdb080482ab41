"""Parts every mode's view uses: the token view, the live view, runs, uploads, exports.

Components import the shell, never a mode's view.
"""
