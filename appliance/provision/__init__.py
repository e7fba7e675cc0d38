"""`appliance provision`: the installer's flow that writes a device's config.

answers.py is what it asks (one model, from a terminal or an --answers file), prompts.py
asks it in a terminal, cameras.py, csr.py and the broker check test what was answered,
appliance/config/replace.py writes the result (as it does for the dashboard's editors), and
flow.py runs the steps in order.
"""
