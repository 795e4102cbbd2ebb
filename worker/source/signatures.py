"""How a workbook's bytes start: what a file is, whatever its name says.

A module of its own so that reading a CSV or JSONL file can tell a workbook given
under the wrong format without loading the spreadsheet readers (`worker.source.sheet`).
"""

ZIP, OLE = b"PK\x03\x04", b"\xd0\xcf\x11\xe0"
SIGNATURES = {ZIP: "a zip archive (.xlsx or .ods)", OLE: "an .xls file"}
"""Each signature and what a file starting with it is."""
