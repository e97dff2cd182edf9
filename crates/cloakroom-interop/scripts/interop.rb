# Cross-check helper for cloakroom-interop's tests, run with Debian's ruby, ruby-activesupport
# and ruby-actionpack (Rails 6.1). Uses the real encrypted cookie jar of ActionDispatch, the
# one ActionDispatch::Session::CookieStore writes sessions through (or, with `signed`, the
# signed jar of `cookies.signed[...]`), configured as a Rails 6.1 app with
# `cookies_serializer = :json` and the 6.1 defaults:
#
#   ruby interop.rb make N SEED [signed]  N cookies with random secret_key_base and session;
#                                 one JSON line each: {"secret", "cookie_name", "payload",
#                                 "cookie" (as sent in Set-Cookie), "cookie_plain", "expires_at"}
#   ruby interop.rb open [signed] reads JSON lines {"secret", "cookie_name", "cookie"} on stdin;
#                                 prints {"payload": the value Rails read, or null}
require "json"
require "action_dispatch"
require "active_support/key_generator"
require "active_support/messages/rotation_configuration"
require "action_dispatch/middleware/cookies"

def jar_for(secret, cookie_header)
  key_generator = ActiveSupport::CachingKeyGenerator.new(
    ActiveSupport::KeyGenerator.new(secret, iterations: 1000)
  )
  env = Rack::MockRequest.env_for("/", "HTTP_COOKIE" => cookie_header)
  env.merge!(
    "action_dispatch.key_generator" => key_generator,
    "action_dispatch.secret_key_base" => secret,
    "action_dispatch.use_authenticated_cookie_encryption" => true,
    "action_dispatch.authenticated_encrypted_cookie_salt" => "authenticated encrypted cookie",
    "action_dispatch.signed_cookie_salt" => "signed cookie",
    "action_dispatch.encrypted_cookie_cipher" => "aes-256-gcm",
    "action_dispatch.use_cookies_with_metadata" => true,
    "action_dispatch.cookies_serializer" => :json,
    "action_dispatch.cookies_rotations" => ActiveSupport::Messages::RotationConfiguration.new
  )
  ActionDispatch::Request.new(env).cookie_jar
end

ALPHABET = ('a'..'z').to_a + ('0'..'9').to_a + ["é", "€", "😀", "\"", "\\", "<", "&", "\n", "\u2028", " "]

def rand_text(rng, n)
  Array.new(rng.rand(0..n)) { ALPHABET[rng.rand(ALPHABET.size)] }.join
end

def rand_value(rng, depth)
  kinds = [:int, :str, :bool, :null, :float]
  kinds += [:list, :hash] if depth > 0
  case kinds[rng.rand(kinds.size)]
  when :int then rng.rand(-(2**53)..(2**53))
  when :float then (rng.rand(-4_000_000..4_000_000)) / 4.0
  when :str then rand_text(rng, 12)
  when :bool then rng.rand < 0.5
  when :null then nil
  when :list then Array.new(rng.rand(0..4)) { rand_value(rng, depth - 1) }
  else rand_hash(rng, depth - 1)
  end
end

def rand_hash(rng, depth)
  h = { "session_id" => rng.bytes(16).unpack1("H*") }
  rng.rand(1..5).times { h["k" + rand_text(rng, 6)] = rand_value(rng, depth) }
  h
end

def rand_secret(rng)
  rng.bytes(64).unpack1("H*")
end

def jar_kind(jar, signed)
  signed ? jar.signed : jar.encrypted
end

def make(n, seed, signed)
  rng = Random.new(seed)
  n.times do
    secret = rand_secret(rng)
    name = "_app#{rng.rand(1000)}_session"
    payload = rand_hash(rng, 3)
    jar = jar_for(secret, "")
    options = { value: payload }
    exp = nil
    if rng.rand < 0.3
      exp = Time.now.to_i + 3600 + rng.rand(1000)
      options[:expires] = Time.at(exp).utc # as `expire_after` sets it
    end
    jar_kind(jar, signed)[name] = options
    cookie = jar_kind(jar, signed).instance_variable_get(:@parent_jar)[name]
    # What the jar committed: the value Rack percent-encodes into Set-Cookie.
    headers = {}
    jar.write(headers)
    set_cookie = headers["Set-Cookie"].split("\n").find { |l| l.start_with?("#{name}=") }
    wire = set_cookie.split(";").first.split("=", 2).last
    puts JSON.generate({ "secret" => secret, "cookie_name" => name, "payload" => payload,
                         "cookie" => wire, "cookie_plain" => cookie, "expires_at" => exp })
  end
end

def open_all(signed)
  $stdin.each_line do |line|
    next if line.strip.empty?
    item = JSON.parse(line)
    jar = jar_for(item["secret"], "#{item["cookie_name"]}=#{item["cookie"]}")
    puts JSON.generate({ "payload" => jar_kind(jar, signed)[item["cookie_name"]] })
  end
end

case ARGV[0]
when "make" then make(Integer(ARGV[1]), Integer(ARGV[2]), ARGV[3] == "signed")
when "open" then open_all(ARGV[1] == "signed")
else abort "usage: ruby interop.rb make N SEED [signed] | open [signed]"
end
