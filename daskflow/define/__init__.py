"""What users write: tasks, the build of a flow body into nodes and lazy
references, and resources.  Nothing here imports distributed."""
