"""Movie trivia: QA data, film-disjoint splits, chunking, hybrid retrieval, the LoRA reader, evaluation, the demo."""
