-- Idle-footprint filler for the benchmark: serves one event, then sits idle.
-- Acknowledges on bench/idle/done so the benchmark knows it has been loaded.
return function(event, ctx)
  ctx.publish("bench/idle/done", {fn = ctx.fn.name, seq = event.data and event.data.seq})
end
