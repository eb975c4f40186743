"""Channel and ad-platform clients (webhook, SMS, e-mail, Kafka, ad audiences, file export).

Each connector implements one interface and is tested against a real local peer; see
docs/architecture.md for where deliveries sit in the pipeline.
"""
