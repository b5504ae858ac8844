"""A one-view Django shop that records an order and enqueues its Purchase on commit."""
