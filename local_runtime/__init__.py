"""Long-running processes: the local edge, the DynamoDB Local launcher, the MLX node agent, and the
`isthmus` command that starts them."""
