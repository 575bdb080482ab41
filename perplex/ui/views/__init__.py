"""One view per mode: the sections a page lays out, built from the shell and the components."""
