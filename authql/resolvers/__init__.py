"""THE logic: one module per flow family. Each flow is ``async def flow(ctx, *, ...)``,
returns a view or outcome, raises AuthError; none imports strawberry or starlette."""
