-- Fires when the boiler reading crosses 85 (see function.json); counts the
-- alarms in ctx.state, so the count survives restarts.
return function(event, ctx)
  local n = ctx.state.incr("alarms")
  ctx.log.warn("boiler at", event.data.value, event.data.unit, "alarm", n)
  ctx.publish("alerts/boiler", {value = event.data.value, unit = event.data.unit, alarm = n,
                                at = event.data.time}, {qos = 1})
end
