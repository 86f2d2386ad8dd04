"""Models as the platform operates them: training runs tracked in MLflow, scores, figures,
the registry (aliases, promotion, audit) and the gate. Heavy libraries (torch, MLflow,
DeepXDE, matplotlib) are imported inside the functions that use them."""
