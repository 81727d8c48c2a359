"""The pieces of one trial: prepare (data, model, device), fit, evaluate, record."""
