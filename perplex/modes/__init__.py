"""One module per mode's analysis; plain Python, no Streamlit."""
