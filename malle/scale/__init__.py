"""Beyond one machine: connecting to Ray clusters, and FAISS indexes built on Ray with their lists on disk."""
