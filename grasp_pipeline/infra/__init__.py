"""Infrastructure at the bottom: storage, objects, commits, lineage, lease, tracking, secrets, processes, progress."""
