"""What `init` is made of: guessing columns and formats from an export, and proposing
value maps from the API's lists.
"""
