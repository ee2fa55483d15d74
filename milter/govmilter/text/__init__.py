"""Text helpers shared by the checks that read words (content, dnsbl): not checks themselves.

normalize.py folds what a sender varies to evade a literal match (NFKC, invisible
characters, confusables, diacritics, HTML to text) and cuts text into windows;
prefilter.py turns a set of patterns into one literal prefilter that skips the
regular expressions on text that cannot match.
"""
