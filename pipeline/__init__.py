"""The processing core of ottscore: decoding, state, features and models, no Kafka."""
