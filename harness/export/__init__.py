"""Readers of a state directory's transcript that write it out in other tools' formats (HAR)."""
