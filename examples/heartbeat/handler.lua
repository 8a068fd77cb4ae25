-- A timer-driven function: ctx.sensor reads a configured sensor now; a
-- failing read is an error value, not an exception.
return function(event, ctx)
  local beat = ctx.state.incr("beats")
  local cpu, err = ctx.sensor("cpu-temp")
  ctx.publish("status/heartbeat", {
    beat = beat,
    scheduled = event.data.scheduled,
    cpu = cpu and cpu.value or nil,
    error = err,
  }, {qos = 1})
end
