-- The benchmark transform, identical to tests/bench/relay.c and the Node-RED flow:
-- bench/in {"dev":"d1","temp":23.5,"seq":N,"t0":NS} -> bench/out, the same object
-- plus temp_f (temp in Fahrenheit) and alert (temp above $THRESHOLD), same QoS as the input.
return function(event, ctx)
  local d = event.data
  d.temp_f = d.temp * 9 / 5 + 32
  d.alert = d.temp > tonumber(ctx.env.THRESHOLD)
  ctx.publish("bench/out", d, {qos = event.qos})
end
