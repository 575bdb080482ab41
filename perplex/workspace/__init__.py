"""What a researcher keeps: the store, sessions, annotations, branches, sets, bundles, exports."""
