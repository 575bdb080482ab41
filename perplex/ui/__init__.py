"""The Streamlit-aware part of Perplex: components, cached resources, session helpers."""
