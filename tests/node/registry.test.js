// The KafkaJS project's Node.js client, @kafkajs/confluent-schema-registry, against orderflow's
// registry: every method of its SchemaRegistry class and the REST calls of its `api`. Each test
// is named after the client call it exercises. The registry's URL comes from
// ORDERFLOW_REGISTRY_URL (services/registry/tests/clients.rs starts one and runs this file).

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { randomUUID } = require('node:crypto')
const { SchemaRegistry, SchemaType, COMPATIBILITY } = require('@kafkajs/confluent-schema-registry')

const host = process.env.ORDERFLOW_REGISTRY_URL
if (!host) throw new Error('ORDERFLOW_REGISTRY_URL is not set')

// The registry requires HTTP basic authentication: the suite acts as an admin user.
const userInfo = variable => {
  const value = process.env[variable]
  if (!value) throw new Error(`${variable} is not set`)
  const [username, ...rest] = value.split(':')
  return { username, password: rest.join(':') }
}
const auth = userInfo('ORDERFLOW_REGISTRY_USER_INFO')

// No retries: an error answer is what a test looks at, not something to wait out.
const registry = () => new SchemaRegistry({ host, auth, retry: { retries: 0 } })
const unique = prefix => `${prefix}${randomUUID().replaceAll('-', '').slice(0, 10)}`

const record = (name, fields, namespace = 'orderflow.node') => ({ type: 'record', name, namespace, fields })
const v1 = name => record(name, [{ name: 'id', type: 'string' }, { name: 'amount', type: 'long' }])
const v2 = name =>
  record(name, [
    { name: 'id', type: 'string' },
    { name: 'amount', type: 'long' },
    { name: 'note', type: ['null', 'string'], default: null },
  ])
const breaking = name =>
  record(name, [
    { name: 'id', type: 'string' },
    { name: 'amount', type: 'long' },
    { name: 'currency', type: 'string' },
  ])
const avro = schema => ({ type: SchemaType.AVRO, schema: JSON.stringify(schema) })

test('auth: a client without credentials, or with only the read role, cannot register', async () => {
  const subject = unique('node-auth-')
  const anonymous = new SchemaRegistry({ host, retry: { retries: 0 } })
  const schema = { type: SchemaType.AVRO, schema: JSON.stringify(v1('Auth')) }
  await assert.rejects(anonymous.register(schema, { subject }), error => error.status === 401)
  const reader = new SchemaRegistry({ host, auth: userInfo('ORDERFLOW_REGISTRY_READER_INFO'), retry: { retries: 0 } })
  await assert.rejects(reader.register(schema, { subject }), error => error.status === 403)
  const { id } = await registry().register(schema, { subject })
  // The reader may read what the admin registered.
  assert.ok(await reader.getSchema(id))
})

test('register: first registration sets the subject level (GET /config/{s} 404, then PUT)', async () => {
  const client = registry()
  const name = unique('Payment')
  const subject = `orderflow.node.${name}`
  const { id } = await client.register(v1(name), { compatibility: COMPATIBILITY.FULL })
  assert.ok(Number.isInteger(id) && id > 0)
  const config = await client.api.Subject.config({ subject })
  assert.deepEqual(config.data(), { compatibilityLevel: 'FULL' })
  // Registering again finds the same id; the level now matches, so no error.
  assert.equal((await client.register(v1(name), { compatibility: COMPATIBILITY.FULL })).id, id)
  await assert.rejects(client.register(v1(name), { compatibility: COMPATIBILITY.NONE }), /Compatibility does not match/)
})

test('register: an incompatible schema is refused with the registry message', async () => {
  const client = registry()
  const name = unique('Payment')
  const subject = unique('node-refused-')
  await client.register(avro(v1(name)), { subject })
  await assert.rejects(client.register(avro(breaking(name)), { subject }), error => {
    assert.equal(error.status, 409)
    assert.match(error.message, /currency/)
    assert.match(error.message, /READER_FIELD_MISSING_DEFAULT_VALUE/)
    return true
  })
})

test('register: an invalid schema is a 422 carrying the registry message', async () => {
  const client = registry()
  const subject = unique('node-invalid-')
  // The client validates Avro itself; a valid Avro text the registry refuses is a PROTOBUF one.
  await assert.rejects(
    client.register({ type: SchemaType.PROTOBUF, schema: 'syntax = "proto3"; message M { int32 a = 1; }' }, { subject }),
    error => {
      assert.equal(error.status, 422)
      assert.match(error.message, /AVRO/)
      return true
    },
  )
})

test('getSchema: the writer schema by id, from a fresh client', async () => {
  const name = unique('Payment')
  const { id } = await registry().register(avro(v1(name)), { subject: unique('node-get-') })
  const schema = await registry().getSchema(id)
  assert.equal(schema.name, `orderflow.node.${name}`)
  await assert.rejects(registry().getSchema(987654), error => error.status === 404)
})

test('encode and decode: a round trip, and decode with a reader schema across versions', async () => {
  const producer = registry()
  const name = unique('Payment')
  const subject = unique('node-codec-')
  const first = await producer.register(avro(v1(name)), { subject })
  const second = await producer.register(avro(v2(name)), { subject })
  assert.notEqual(first.id, second.id)
  const v1Bytes = await producer.encode(first.id, { id: 'p-1', amount: 1999 })
  assert.equal(v1Bytes[0], 0)
  assert.equal(v1Bytes.readInt32BE(1), first.id)
  const v2Bytes = await producer.encode(second.id, { id: 'p-2', amount: 5, note: 'gift' })

  const consumer = registry()
  assert.deepEqual({ ...(await consumer.decode(v1Bytes)) }, { id: 'p-1', amount: 1999 })
  // A v1 reader skips the new field; a v2 reader fills in its default.
  const asV1 = await consumer.decode(v2Bytes, { [SchemaType.AVRO]: { readerSchema: v1(name) } })
  assert.deepEqual({ ...asV1 }, { id: 'p-2', amount: 5 })
  const asV2 = await consumer.decode(v1Bytes, { [SchemaType.AVRO]: { readerSchema: v2(name) } })
  assert.deepEqual({ ...asV2 }, { id: 'p-1', amount: 1999, note: null })
})

test('getRegistryId: the id of a subject version', async () => {
  const client = registry()
  const name = unique('Payment')
  const subject = unique('node-version-')
  const { id } = await client.register(avro(v1(name)), { subject })
  assert.equal(await client.getRegistryId(subject, 1), id)
  assert.equal(await client.getRegistryId(subject, 'latest'), id)
  await assert.rejects(client.getRegistryId(subject, 2), error => error.status === 404)
})

test('getRegistryIdBySchema: lookup under a subject (POST /subjects/{s})', async () => {
  const client = registry()
  const name = unique('Payment')
  const subject = unique('node-lookup-')
  const { id } = await client.register(avro(v1(name)), { subject })
  assert.equal(await client.getRegistryIdBySchema(subject, avro(v1(name))), id)
  await assert.rejects(client.getRegistryIdBySchema(subject, avro(v2(name))), /Schema not found/)
})

test('getLatestSchemaId: the newest version of a subject', async () => {
  const client = registry()
  const name = unique('Payment')
  const subject = unique('node-latest-')
  await client.register(avro(v1(name)), { subject })
  const { id } = await client.register(avro(v2(name)), { subject })
  assert.equal(await client.getLatestSchemaId(subject), id)
  await assert.rejects(client.getLatestSchemaId(unique('node-none-')), error => {
    assert.equal(error.status, 404)
    assert.match(error.message, /not found/)
    return true
  })
})

test('getreferencedSchemasFromReference, register and decode with schema references', async () => {
  const client = registry()
  const money = unique('Money')
  const moneySubject = unique('node-money-')
  await client.register(avro(record(money, [{ name: 'minor', type: 'long' }, { name: 'currency', type: 'string' }])), {
    subject: moneySubject,
  })
  const reference = { name: `orderflow.node.${money}`, subject: moneySubject, version: 1 }
  const referenced = await client.getreferencedSchemasFromReference(reference, new (require('@kafkajs/confluent-schema-registry/dist/AvroHelper').default)(), new Set())
  assert.equal(referenced.length, 1)
  const quote = record(unique('Quote'), [{ name: 'price', type: `orderflow.node.${money}` }])
  const { id } = await client.register(
    { type: SchemaType.AVRO, schema: JSON.stringify(quote), references: [reference] },
    { subject: unique('node-quote-') },
  )
  const bytes = await client.encode(id, { price: { minor: 1250, currency: 'EUR' } })
  const decoded = await registry().decode(bytes)
  assert.deepEqual({ minor: decoded.price.minor, currency: decoded.price.currency }, { minor: 1250, currency: 'EUR' })
  const referencedBy = await client.api.Subject.version({ subject: moneySubject, version: 1 })
  assert.equal(referencedBy.data().version, 1)
})

test('api.Subject.all: the subject list', async () => {
  const client = registry()
  const subject = unique('node-all-')
  await client.register(avro(v1(unique('Payment'))), { subject })
  const subjects = (await client.api.Subject.all()).data()
  assert.ok(subjects.includes(subject))
})

test('api.Subject.compatible: POST /compatibility/subjects/{s}/versions/latest', async () => {
  const client = registry()
  const name = unique('Payment')
  const subject = unique('node-compat-')
  await client.register(avro(v1(name)), { subject })
  const check = async schema =>
    (await client.api.Subject.compatible({ subject, body: { schema: JSON.stringify(schema) } })).data()
  assert.deepEqual(await check(v2(name)), { is_compatible: true })
  assert.deepEqual(await check(breaking(name)), { is_compatible: false })
})

test('api.Subject.updateConfig and api.Subject.config: PUT and GET /config/{s}', async () => {
  const client = registry()
  const subject = unique('node-config-')
  await assert.rejects(client.api.Subject.config({ subject }), error => error.status === 404)
  const put = await client.api.Subject.updateConfig({ subject, body: { compatibility: 'FORWARD_TRANSITIVE' } })
  assert.deepEqual(put.data(), { compatibility: 'FORWARD_TRANSITIVE' })
  assert.deepEqual((await client.api.Subject.config({ subject })).data(), { compatibilityLevel: 'FORWARD_TRANSITIVE' })
})

test('api.Subject.latestVersion and api.Subject.registered: the raw answers', async () => {
  const client = registry()
  const name = unique('Payment')
  const subject = unique('node-raw-')
  const { id } = await client.register(avro(v1(name)), { subject })
  const latest = (await client.api.Subject.latestVersion({ subject })).data()
  assert.equal(latest.subject, subject)
  assert.equal(latest.version, 1)
  assert.equal(latest.id, id)
  assert.deepEqual(JSON.parse(latest.schema), v1(name))
  const registered = (await client.api.Subject.registered({ subject, body: { schema: JSON.stringify(v1(name)) } })).data()
  assert.equal(registered.id, id)
})
