"""The content check: the officers' content rules and scores over headers, body text and documents.

check.py compiles the `kind = "content"` rule files and judges a message with
them; documents.py reads the text of attached documents (PDF, OOXML, ODF, RTF,
OLE) within a time and byte budget.
"""
