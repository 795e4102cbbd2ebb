"""What `report --html` and `worklist` are made of: the page's data model, the one
ledger reader, masking, charts, the template, and the worklist's files.
"""
