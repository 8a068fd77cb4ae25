-- Reacts to a falling edge (button pressed) and drives an output line that
-- function.json declares; any other line would be refused.
return function(event, ctx)
  local rings = ctx.state.incr("rings")
  local led = rings % 2
  ctx.gpio("sim0", 5, led)
  ctx.publish("door/bell", {ring = rings, led = led, edge = event.data.edge}, {qos = 1})
end
