"""The CNN: network, data pipeline, training, metrics and the serving classifier."""
