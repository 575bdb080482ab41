"""The app around every page: sign-in, the sidebar, the session, resources, URL and page state.

The shell imports nothing from `ui.components` or `ui.views`.
"""
