"""Reading and writing: every file format, the statistics file, atomic outputs."""
