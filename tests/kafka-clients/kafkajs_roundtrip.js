// kafkajs: produce keyed records with headers, read them back in a consumer group that
// commits. Settings (JSON argv): bootstrap, ca/cert/key, topic, group, count.
// Prints {"records": [{"offset", "key", "value", "headers"}...]}.
const fs = require('fs');
const { Kafka, logLevel } = require('kafkajs');

async function main() {
  const a = JSON.parse(process.argv[2]);
  const kafka = new Kafka({
    clientId: 'kafkajs-roundtrip',
    brokers: [a.bootstrap],
    logLevel: logLevel.ERROR,
    ssl: {
      ca: [fs.readFileSync(a.ca, 'utf8')],
      cert: fs.readFileSync(a.cert, 'utf8'),
      key: fs.readFileSync(a.key, 'utf8'),
    },
  });
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < a.count; i++) {
    messages.push({ key: `k${i}`, value: `v${i}`, partition: 0, headers: { n: `${i}` } });
  }
  await producer.send({ topic: a.topic, acks: -1, messages });
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: a.group, sessionTimeout: 10000 });
  await consumer.connect();
  await consumer.subscribe({ topic: a.topic, fromBeginning: true });
  const records = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${records.length} records in 30 s`)), 30000);
    consumer.run({
      autoCommit: true,
      eachMessage: async ({ message }) => {
        records.push({
          offset: Number(message.offset),
          key: message.key && message.key.toString(),
          value: message.value && message.value.toString(),
          headers: Object.entries(message.headers || {}).map(([k, v]) => [k, v && v.toString()]),
        });
        if (records.length === a.count) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  await consumer.commitOffsets([{ topic: a.topic, partition: 0, offset: `${a.count}` }]);
  await consumer.disconnect();
  console.log(JSON.stringify({ records }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
