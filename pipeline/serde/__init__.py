"""What ottscore reads and writes outside the process: snapshots, JSONL files, schemas."""
